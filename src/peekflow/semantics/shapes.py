"""WordNet 3.0 synsets of the embedded default's generated shapes (peekflow.data.shapes), for `semantics.synsets`.

Chosen from the definitions: the sense of the drawn figure, in the noun.shape hierarchy where WordNet has one.
"loose" marks a synset that names something the drawing only depicts or resembles.
"""

from __future__ import annotations

SHAPE_SYNSETS = {
    # in-distribution classes
    "circle": "circle.n.01",  # "ellipse in which the two axes are of equal length"
    "square": "square.n.01",  # "a plane rectangle with four equal sides and four right angles"
    "triangle": "triangle.n.01",  # "a three-sided polygon"
    "star": "star.n.05",  # "a plane figure with 5 or more points"
    "cross": "greek_cross.n.01",  # loose: "a cross with each of the four arms the same length", filed as an emblem
    # (artifact); WordNet has no plus-shaped figure (plus_sign.n.01 is the arithmetic sign)
    "ring": "ring.n.02",  # "a toroidal shape" (lemmas ring, halo, annulus, doughnut): a solid, drawn as its flat annulus
    "heart": "heart.n.07",  # "a plane figure with rounded sides curving inward at the top and intersecting at the bottom"
    "arrow": "arrow.n.01",  # "a mark to indicate a direction or relation"
    "crescent": "crescent.n.01",  # "any shape resembling the curved shape of the moon in its first or last quarters"
    "lightning": "zigzag.n.01",  # loose: the drawn bolt's outline, "an angular shape characterized by sharp turns in
    # alternating directions"; lightning.n.01 is the electric discharge itself, outside the shape hierarchy
    # near-OOD shapes
    "pentagon": "pentagon.n.03",  # "a five-sided polygon"
    "hexagon": "hexagon.n.01",  # "a six-sided polygon"
    "octagon": "octagon.n.01",  # "an eight-sided polygon"
    "ellipse": "ellipse.n.01",  # "a closed plane curve resulting from the intersection of a circular cone and a plane"
    "trapezoid": "trapezoid.n.01",  # "a quadrilateral with two parallel sides"
    "semicircle": "semicircle.n.01",  # "a plane figure with the shape of half a circle"
    "l_shape": "l.n.04",  # loose: "the 12th letter of the Roman alphabet", a written symbol; no L-shaped figure
    "t_shape": "t.n.04",  # loose: "the 20th letter of the Roman alphabet"; tee.n.* are golf and football supports
    "parallelogram": "parallelogram.n.01",  # "a quadrilateral whose opposite sides are both parallel and equal"
    "drop": "teardrop.n.01",  # "anything shaped like a falling drop"
    "chevron": "chevron.n.02",  # loose: "an inverted V-shaped charge", a heraldic emblem (artifact); the other sense
    # is a sleeve badge
    "hourglass": "hourglass.n.01",  # loose: "a sandglass that runs for sixty minutes", a timepiece drawn as its outline
}
LOOSE = ("cross", "lightning", "l_shape", "t_shape", "chevron", "hourglass")
