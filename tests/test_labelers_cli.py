"""training/labelers.py's command line: each subcommand's flags reach its function with the old defaults."""

from __future__ import annotations

import pytest

from faceapp.errors import FaceAppError
from training import labelers


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(labelers, "RUN", {name: (lambda a, name=name: seen.append((name, a)) or 0)
                                          for name in labelers.RUN})
    return seen


def test_subcommands_get_their_options(calls):
    assert labelers.main(["fit-age-gender", "--exclude", "a.txt", "--exclude", "b.txt", "--num-train", "5"]) == 0
    assert labelers.main(["fit-glasses", "--labels", "l.json", "--C", "0.5"]) == 0
    assert labelers.main(["score", "--out", "s.json"]) == 0
    assert labelers.main(["evaluate", "--scores", "s.json", "--labels", "l.json"]) == 0
    (n1, fit), (n2, glasses), (n3, score), (n4, ev) = calls
    assert (n1, n2, n3, n4) == ("fit-age-gender", "fit-glasses", "score", "evaluate")
    assert fit.exclude == ("a.txt", "b.txt") and fit.num_train == 5 and fit.num_test == 1000 and not fit.no_exclude
    assert fit.utkface == "../shared/data/utkface/utkface-200px.zip" and fit.cache is None
    assert glasses.C == 0.5 and glasses.out == "runs/labelers/glasses.safetensors" and glasses.random_subset is None
    assert (score.num, score.seed, score.skip, score.threads, score.age_gender) == (300, 1, 0, 2, None)
    assert ev.glasses_threshold == labelers.GLASSES_THRESHOLD
    assert labelers.main(["fit-age-gender", "--no-exclude"]) == 0 and calls[-1][1].no_exclude
    assert calls[-1][1].exclude is None  # not given: the held-out lists


def test_required_flags_and_errors(monkeypatch, capsys):
    with pytest.raises(SystemExit):
        labelers.main(["score"])  # --out is required

    def fails(a):
        raise FaceAppError("nothing to score")

    monkeypatch.setattr(labelers, "RUN", {**labelers.RUN, "score": fails})
    assert labelers.main(["score", "--out", "x.json"]) == 2 and "error: nothing to score" in capsys.readouterr().err
