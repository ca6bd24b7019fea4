"""What a run is called in MLflow and where its printed link leads (no MLflow needed)."""

from __future__ import annotations

from pathlib import Path

from harness.tracking import parent_run_name, run_page_url, runs_table_url

MLFLOW_JS = Path(__import__("mlflow").__file__).parent / "server" / "js" / "build" / "static" / "js"


def test_parents_of_one_model_and_strategy_get_names_that_differ():
    """Every parent of a model/strategy was ``tiny_char_chat/single``: the name now carries the
    datasets and the run's short uid, the same for the live run and its replay."""
    one = parent_run_name("tiny_char_chat", "single", ["arith_mc"], "3f9a1c" + "0" * 26)
    two = parent_run_name("tiny_char_chat", "single", ["arith_mc"], "77aa01" + "0" * 26)
    other = parent_run_name("tiny_char_chat", "single", ["reverse_gen"], "3f9a1c" + "0" * 26)
    assert one == "tiny_char_chat/single arith_mc 3f9a1c"
    assert len({one, two, other}) == 3
    many = parent_run_name("m", "s", ["a", "b", "c", "d", "e"], "abcdef12")
    assert many == "m/s a,b,c+2 abcdef"  # a long list stays short


def test_the_run_link_opens_the_classic_run_page_as_the_table_link_does():
    """MLflow 3's UI shows GenAI's run page (Traces, Evaluations) unless the URL's
    ``workflowType`` says machine_learning; the runs-table link already said it."""
    run = run_page_url("http://h:5000/", "7", "abc")
    assert run == "http://h:5000/#/experiments/7/runs/abc?workflowType=machine_learning"
    assert "workflowType=machine_learning" in runs_table_url("http://h:5000", "7")
    # The installed UI reads the URL's workflowType before the browser's stored one.
    bundle = next(MLFLOW_JS.glob("main.*.js")).read_text(errors="replace")
    assert 'e.get("workflowType");return n===l.GENAI||n===l.MACHINE_LEARNING?n:t' in bundle
