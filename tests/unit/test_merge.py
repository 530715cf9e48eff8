"""The merged DataFrame reads like the user's data: its columns, index, dtypes and gaps."""

import pandas as pd
import pytest

from pp_notebook.cell import header_labels, parse_header
from pp_notebook.records import TaskRecord, errors_frame, item_label, merged_frame

METADATA = ["status", "engine", "host", "duration_s", "attempts", "error"]


def ok(task, item, value, engine=0):
    return TaskRecord(task, item, "ok", value, engine=engine, host="h", duration_s=0.1,
                      attempts=1)


def failed(task, item, status="error", message="boom"):
    return TaskRecord(task, item, status, None, "ValueError", message, engine=1, host="h",
                      duration_s=0.2, attempts=1)


def test_user_columns_come_first_then_metadata_and_task_is_the_index():
    frame = merged_frame([ok(0, 0, {"y": 1, "z": "a"}), ok(1, 1, {"y": 2, "z": "b"})])
    assert list(frame.columns) == ["y", "z", *METADATA]
    assert frame.index.name == "task" and list(frame.index) == [0, 1]


def test_header_names_are_columns_filled_on_failed_rows_too():
    records = [ok(0, (1, "a"), {"beta": 10, "y": 1.5}), failed(1, (2, "b"))]
    frame = merged_frame(records, labels=lambda item: dict(zip(("beta", "gamma"), item)))
    assert list(frame.columns) == ["beta", "gamma", "y", *METADATA]
    assert list(frame["gamma"]) == ["a", "b"]
    assert frame.loc[0, "beta"] == 10  # the result's own value stands where the item succeeded
    assert frame.loc[1, "beta"] == 2  # the failed row still says which input it was for
    assert str(frame["beta"].dtype) == "int64"


def test_a_non_scalar_target_is_not_made_a_column():
    row = pd.Series({"v": 1})
    frame = merged_frame([ok(0, (0, row), 5)], labels=lambda item: {"i": item[0], "row": item[1]})
    assert list(frame.columns) == ["i", "result", *METADATA]


def test_map_puts_scalar_items_in_an_item_column_and_leaves_others_out():
    scalars = merged_frame([ok(0, 3, 9), failed(1, 4)], labels=item_label)
    assert list(scalars.columns) == ["item", "result", *METADATA]
    assert list(scalars["item"]) == [3, 4]
    tuples = merged_frame([ok(0, (1, 2), 3)], labels=item_label)
    assert "item" not in tuples.columns


@pytest.mark.parametrize("items", [[3, 4], [3, (1, 2)]], ids=["scalars", "mixed"])
def test_a_cell_header_names_its_item_column_and_each_unpacked_name(items):
    single = header_labels(parse_header("x in items"))
    frame = merged_frame([ok(0, items[0], 9), failed(1, items[1])], labels=single)
    assert list(frame.columns) == ["x", "result", *METADATA]
    expected = [3, 4] if items[1] == 4 else [3, None]  # a tuple is no label
    assert frame["x"].astype(object).where(frame["x"].notna(), None).tolist() == expected
    pairs = header_labels(parse_header("a, b in items"))
    frame = merged_frame([ok(0, (1, "u"), 9), failed(1, 5)], labels=pairs)
    assert list(frame.columns) == ["a", "b", "result", *METADATA]
    assert frame.loc[0, "b"] == "u" and pd.isna(frame.loc[1, "b"])  # 5 does not unpack


def test_integer_columns_stay_integer_nullable_where_failed_rows_leave_gaps():
    whole = merged_frame([ok(0, 0, {"n": 1}), ok(1, 1, {"n": 2})])
    assert str(whole["n"].dtype) == "int64"
    gapped = merged_frame([ok(0, 0, {"n": 1, "flag": True}), failed(1, 1),
                           ok(2, 2, {"n": 3, "flag": False})])
    assert str(gapped["n"].dtype) == "Int64" and gapped["n"].isna().tolist() == [False, True, False]
    assert str(gapped["flag"].dtype) == "boolean"
    assert str(gapped["engine"].dtype) == "Int64" and str(gapped["attempts"].dtype) == "int64"


def test_integer_columns_stay_integer_across_dataframe_results_and_failures():
    records = [ok(0, 0, pd.DataFrame({"n": [1, 2]})), failed(1, 1), ok(2, 2, {"n": 5})]
    frame = merged_frame(records)
    assert list(frame.index) == [0, 0, 1, 2]  # a DataFrame result repeats its task
    assert str(frame["n"].dtype) == "Int64"
    assert frame["n"].tolist()[:2] == [1, 2] and frame["n"].tolist()[3] == 5


def test_error_is_na_on_every_successful_row_never_none_or_nan():
    frame = merged_frame([ok(0, 0, 1), failed(1, 1), ok(2, 2, 3)])
    errors = frame["error"]
    assert errors.iloc[1] == "ValueError: boom"
    assert errors.iloc[0] is pd.NA and errors.iloc[2] is pd.NA
    assert errors.map(type).isin([str, type(pd.NA)]).all()


def test_a_result_named_like_metadata_keeps_its_name_and_the_metadata_is_prefixed():
    frame = merged_frame([ok(0, 0, {"status": "mine", "task": "t0"})])
    assert frame.loc[0, "status"] == "mine" and frame.loc[0, "pp_status"] == "ok"
    assert frame.index.name == "pp_task" and list(frame["task"]) == ["t0"]


def test_an_empty_run_has_the_metadata_columns_and_the_task_index():
    frame = merged_frame([], labels=item_label)
    assert list(frame.columns) == METADATA and frame.index.name == "task" and frame.empty


def test_errors_lists_failures_only_with_the_same_index():
    records = [ok(0, 0, 1), failed(1, "one"), failed(2, "two", status="timeout"),
               TaskRecord(3, "three", "cancelled", error="the run was cancelled")]
    errors = errors_frame(records)
    assert errors.index.name == "task" and list(errors.index) == [1, 2]
    assert list(errors["item"]) == ["one", "two"] and list(errors["status"]) == ["error", "timeout"]


@pytest.mark.parametrize("rows", [1, 7])
def test_labels_fill_every_row_of_a_dataframe_result(rows):
    frame = merged_frame([ok(0, 4, pd.DataFrame({"v": range(rows)}))],
                         labels=lambda item: {"k": item})
    assert list(frame.columns) == ["k", "v", *METADATA]
    assert frame["k"].tolist() == [4] * rows
