"""Class prototypes: synthetic images that maximise what a network associates with each class (DeepDream,
DeepInversion), their files, and how well they carry their class (target and probe accuracy)."""
