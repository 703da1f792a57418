"""bench/years_bound.py: the least descriptor move that makes the age labeler read N years older."""

import numpy as np

from training.age_gender import AgeGenderModel


def test_least_move_is_the_distance_to_where_the_references_are_that_much_older(bench_script):
    mod = bench_script("years_bound")
    rng = np.random.default_rng(0)
    # references on a line: age = 100 * descriptor 0 (so +20 years is a move of 0.2), tiny noise elsewhere
    desc = rng.normal(size=(2000, 128)) * 0.002
    desc[:, 0] = rng.uniform(0, 1, size=2000)
    model = AgeGenderModel.fit(desc, 100 * desc[:, 0], rng.integers(0, 2, 2000), k=10)
    axis = mod.age_axis(model)
    assert abs(axis[0]) > 0.99  # the labeler's age axis is descriptor 0
    faces = np.zeros((3, 128))
    faces[:, 0] = [0.2, 0.4, 0.9]  # ages 20, 40, 90
    moves = mod.least_moves(model, faces, 20, steps=241)
    assert np.allclose(moves[:2], 0.2, atol=0.03), moves
    assert np.isinf(moves[2])  # nobody in the references is 110
    assert np.all(mod.least_moves(model, faces[:2], 40, steps=241) > moves[:2] + 0.15)
