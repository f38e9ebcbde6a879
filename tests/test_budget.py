"""The Train pane's resume budget: what it parses, what it refuses (naming the value and what is
allowed), and the overrides it hands to the resume."""

from __future__ import annotations

import pytest

from workbench.config.schema import TrainConfig
from workbench.errors import WorkbenchError
from workbench.training import budget


def test_a_larger_budget_becomes_that_budget_alone():
    train = TrainConfig(max_steps=200, max_minutes=None)
    done = {"steps": 200, "tokens": 102400, "minutes": 1.5}
    assert budget.current(train) == ("steps", "200")
    assert budget.overrides("first", train, "steps", "400", done) == {"max_steps": 400}
    # a budget of another kind clears the spent one, or the run would stop at it again
    assert budget.overrides("first", train, "minutes", "5", done) == {"max_steps": None, "max_minutes": 5.0}


@pytest.mark.parametrize("kind,text,needle", [
    ("steps", "150", "budget 150 steps is not allowed: run 'first' has already trained 200 steps"),
    ("steps", "ten", "budget 'ten' is not allowed: expected a whole number of steps"),
    ("minutes", "-1", "budget '-1' is not allowed: expected a number of minutes above 0"),
    ("tokens", "0", "budget '0' is not allowed: expected a whole number of tokens from 1"),
])
def test_a_budget_that_cannot_extend_the_run_is_refused(kind, text, needle):
    done = {"steps": 200, "tokens": 102400, "minutes": 1.5}
    with pytest.raises(WorkbenchError, match=needle.replace("(", r"\(")):
        budget.overrides("first", TrainConfig(max_steps=200), kind, text, done)


def test_the_budget_of_each_kind_as_the_form_writes_it():
    train = TrainConfig(max_steps=None, max_tokens=None, max_minutes=2.5)
    assert budget.current(train) == ("minutes", "2.5")
    assert [budget.value(train, k) for k in budget.KINDS] == ["", "", "2.5"]


def test_a_resume_goes_on_from_the_latest_checkpoint(trained):
    from helpers import TRAINED_RUN

    point = budget.resume_point(trained, TRAINED_RUN)
    assert point["name"] == TRAINED_RUN and point["train"].max_steps == 12
    assert point["done"]["steps"] == 12 and point["done"]["tokens"] > 0
