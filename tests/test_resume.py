"""The pieces of crash-safe resume: journals, row failures, and what an unfinished
execution keeps of distilabel's cache."""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from distilabel.pipeline import Pipeline
from distilabel.steps import Step, StepInput

from agfsync.pipelines import build_preset
from agfsync.run.artifacts import recorded_or_computed
from agfsync.run.failures import row_failures
from agfsync.run.journal import Journal, journal_key
from agfsync.run.resume import (
    UNFINISHED_MARKER,
    begin_execution,
    discard_unfinished_work,
    finish_execution,
    record_steps_to_redo,
    skip_finished_stages,
)


class TestJournal:
    def test_a_recorded_value_comes_back_nan_included(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path / "journal")
        journal.put("key", {"scores": [1.5, math.nan], "error": None})
        value = journal.get("key")
        assert value is not None
        assert value["scores"][0] == 1.5 and math.isnan(value["scores"][1])
        assert value["error"] is None
        assert journal.get("another key") is None
        assert len(list((tmp_path / "journal").iterdir())) == 1

    def test_writes_leave_no_partial_file(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path)
        journal.put("key", [1])
        journal.put("key", [2])
        assert [path.name.startswith(".") for path in tmp_path.iterdir()] == [False]
        assert journal.get("key") == [2]

    def test_an_entry_recorded_for_another_key_is_not_returned(self, tmp_path: Path) -> None:
        journal = Journal(tmp_path)
        journal.put("key", "value")
        (entry,) = tmp_path.iterdir()
        entry.write_text(json.dumps({"key": "other", "value": "stale"}))
        assert journal.get("key") is None
        entry.write_text('{"key": "key", "val')  # edited by hand, not JSON any more
        assert journal.get("key") is None

    def test_keys_depend_on_every_input_column_and_on_order(self) -> None:
        rows = [{"prompt": "a", "n": 1, "ignored": 0}, {"prompt": "b", "n": 2, "ignored": 0}]
        key = journal_key(rows, ["prompt", "n"])
        assert key == journal_key([{**rows[0], "ignored": 9}, rows[1]], ["prompt", "n"])
        assert key != journal_key([{**rows[0], "n": 3}, rows[1]], ["prompt", "n"])
        assert key != journal_key(rows[::-1], ["prompt", "n"])


class TestRowFailures:
    def test_a_finished_row_has_none(self) -> None:
        row = {
            "prompt": "a cat",
            "qa_error": None,
            "generation_error": None,
            "image_paths": ["p/0.png"],
            "judging_errors": [None],
            "weighted_scores": [1.0],
            "chosen_index": 0,
            "pair_error": None,
        }
        assert row_failures(row) == []

    def test_data_driven_outcomes_are_final(self) -> None:
        no_pair = {"chosen_index": None, "pair_error": "score margin 0.1 is below the minimum"}
        assert row_failures(no_pair) == []
        no_prompt = {"prompt": None, "prompt_generation_notes": "0 of 3 prompts after 5 calls"}
        assert row_failures({**no_prompt, "qa_error": "no prompt to decompose"}) == []
        assert row_failures(no_prompt) == []  # the LLM only repeated itself

    @pytest.mark.parametrize(
        ("row", "column"),
        [
            ({"prompt": "a cat", "qa_error": "request failed"}, "qa_error"),
            ({"prompt_error": "2 failed requests"}, "prompt_error"),
            ({"rewrite_error": "request failed"}, "rewrite_error"),
            ({"generation_error": "rendering failed: OutOfMemoryError"}, "generation_error"),
            ({"judging_errors": [None, "judge vqa failed: RuntimeError"]}, "judging_errors"),
            ({"judging_errors": ["unreadable image: p/0.png: truncated"]}, "image_paths"),
            ({"image_paths": None}, "image_paths"),
            ({"prompt": "a cat", "qa_pairs": None, "qa_error": None}, "qa_pairs"),
            ({"prompt": None, "prompt_generation_notes": None}, "prompt"),
            ({"weighted_scores": None}, "weighted_scores"),
            ({"chosen_index": None, "pair_error": None}, "chosen_index"),
        ],
    )
    def test_each_failure_names_the_column_of_the_step_to_redo(
        self, row: dict[str, Any], column: str
    ) -> None:
        assert [failure.column for failure in row_failures(row)] == [column]


class Doubling(Step):
    """Doubles `n`, failing (`error`) on negative numbers; counts what it computed."""

    computed: ClassVar[list[int]] = []

    @property
    def inputs(self) -> list[str]:
        return ["n"]

    @property
    def outputs(self) -> list[str]:
        return ["double", "generation_error"]

    def process(self, inputs: StepInput) -> Any:
        def compute(units: list[list[dict[str, Any]]]) -> list[list[dict[str, Any]]]:
            results = []
            for (row,) in units:
                self.computed.append(row["n"])
                failed = row["n"] < 0
                results.append(
                    [{**row, "double": 2 * row["n"], "generation_error": failed or None}]
                )
            return results

        for row, (output,) in zip(
            inputs, recorded_or_computed(self, [[row] for row in inputs], compute), strict=True
        ):
            row.update(output)
        yield inputs


class TestRecordedOrComputed:
    def test_finished_units_are_reused_and_failed_ones_computed_again(self, tmp_path: Path) -> None:
        step = Doubling(name="double")
        step.set_pipeline_artifacts_path(tmp_path / "artifacts")
        Doubling.computed = []
        rows = [{"n": 1}, {"n": -2}, {"n": 3}]
        first = next(step.process([dict(row) for row in rows]))
        assert [row["double"] for row in first] == [2, -4, 6]
        again = next(step.process([dict(row) for row in rows]))
        assert again == first
        assert Doubling.computed == [1, -2, 3, -2]
        assert list(again[0]) == ["n", "double", "generation_error"]  # outputs' order

    def test_outside_a_pipeline_everything_is_computed(self) -> None:
        step = Doubling(name="double")
        Doubling.computed = []
        next(step.process([{"n": 1}]))
        next(step.process([{"n": 1}]))
        assert Doubling.computed == [1, 1]


def offline_pipeline(cache: Path) -> Pipeline:
    pipeline = build_preset("offline")
    pipeline._cache_dir = cache
    pipeline._set_runtime_parameters({})
    return pipeline


def write_outputs(pipeline: Pipeline, step: str, batches: Sequence[tuple[int, bool] | str]) -> Path:
    """A `steps_data` folder for `step`, one file per batch: `(seq_no, last_batch)`, or a
    string written as the file's (torn) content."""
    signature = pipeline.dag.get_step(step)["step"].signature
    folder = pipeline._cache_location["steps_data"] / f"{step}_{signature}"
    folder.mkdir(parents=True)
    for index, batch in enumerate(batches):
        if isinstance(batch, str):
            content = batch
        else:
            content = json.dumps({"seq_no": batch[0], "last_batch": batch[1], "data": [[]]})
        (folder / f"batch_{index}.json").write_text(content)
    return folder


FINISHED = [(0, False), (1, True)]


class TestUnfinishedExecution:
    def test_a_finished_execution_is_left_alone(self, tmp_path: Path) -> None:
        pipeline = offline_pipeline(tmp_path)
        begin_execution(pipeline, use_cache=True)
        finish_execution(pipeline)
        execution = pipeline._cache_location["batch_manager"].parent
        (execution / "batch_manager.json").write_text("{}")
        outputs = write_outputs(pipeline, "select_pairs", FINISHED)
        assert discard_unfinished_work(pipeline) == []
        assert outputs.exists() and (execution / "batch_manager.json").exists()

    def test_incomplete_outputs_are_discarded_even_without_a_mark(self, tmp_path: Path) -> None:
        """Left by another execution that was killed: they would pass for complete."""
        pipeline = offline_pipeline(tmp_path)
        partial = write_outputs(pipeline, "generate_images", [(0, False)])
        complete = write_outputs(pipeline, "load_prompts", FINISHED)
        assert discard_unfinished_work(pipeline) == ["generate_images"]
        assert complete.exists() and not partial.exists()

    def test_after_a_crash_only_incomplete_outputs_and_the_leaf_are_discarded(
        self, tmp_path: Path
    ) -> None:
        pipeline = offline_pipeline(tmp_path)
        begin_execution(pipeline, use_cache=True)
        execution = pipeline._cache_location["batch_manager"].parent
        (execution / "batch_manager.json").write_text('{"torn')
        complete = write_outputs(pipeline, "load_prompts", [(0, False), (1, False), (2, True)])
        gap = write_outputs(pipeline, "generate_images", [(0, False), (2, True)])
        torn = write_outputs(pipeline, "judge_images", [(0, False), '{"seq_no": 1, "la'])
        done = write_outputs(pipeline, "select_pairs", FINISHED)
        leaf = write_outputs(pipeline, "export_pairs", FINISHED)
        assert sorted(discard_unfinished_work(pipeline)) == [
            "export_pairs",
            "generate_images",
            "judge_images",
        ]
        assert done.exists()
        assert complete.exists() and not gap.exists() and not torn.exists()
        assert not leaf.exists() and not (execution / "batch_manager.json").exists()

    def test_failed_steps_and_those_after_them_are_redone(self, tmp_path: Path) -> None:
        pipeline = offline_pipeline(tmp_path)
        folders = {
            step: write_outputs(pipeline, step, FINISHED)
            for step in ("load_prompts", "generate_images", "judge_images", "select_pairs")
        }
        begin_execution(pipeline, use_cache=True)
        record_steps_to_redo(pipeline, ["generate_images"])
        assert sorted(discard_unfinished_work(pipeline)) == [
            "generate_images",
            "judge_images",
            "select_pairs",
        ]
        assert [step for step, folder in folders.items() if folder.exists()] == ["load_prompts"]

    def test_without_the_cache_recorded_work_is_forgotten(self, tmp_path: Path) -> None:
        pipeline = offline_pipeline(tmp_path)
        outputs = write_outputs(pipeline, "judge_images", FINISHED)
        journal = pipeline._cache_location["data"] / "agfsync-journal" / "judge_images-x"
        journal.mkdir(parents=True)
        begin_execution(pipeline, use_cache=False)
        assert not outputs.exists() and not journal.exists()
        execution = pipeline._cache_location["batch_manager"].parent
        assert json.loads((execution / UNFINISHED_MARKER).read_text())["steps_to_redo"] == []


class TestStages:
    def text_pipeline(self, cache: Path) -> Pipeline:
        pipeline = build_preset("text-openai")
        pipeline._cache_dir = cache
        pipeline._set_runtime_parameters({})
        return pipeline

    def test_stages_whose_steps_are_all_cached_count_as_done(self, tmp_path: Path) -> None:
        pipeline = self.text_pipeline(tmp_path)
        for step in ("load_categories", "write_prompts", "deduplicate_prompts"):
            write_outputs(pipeline, step, FINISHED)
        assert skip_finished_stages(pipeline) == 2
        record = json.loads(pipeline._cache_location["stages_file"].read_text())
        assert record == {
            "current_stage": 2,
            "stages_last_batch": [["write_prompts"], ["deduplicate_prompts"], []],
        }

    def test_a_fresh_execution_starts_at_the_first_stage(self, tmp_path: Path) -> None:
        pipeline = self.text_pipeline(tmp_path)
        write_outputs(pipeline, "load_categories", FINISHED)
        assert skip_finished_stages(pipeline) == 0

    def test_an_existing_record_is_kept(self, tmp_path: Path) -> None:
        pipeline = self.text_pipeline(tmp_path)
        stages = pipeline._cache_location["stages_file"]
        stages.parent.mkdir(parents=True)
        stages.write_text(json.dumps({"current_stage": 1, "stages_last_batch": [[], [], []]}))
        assert skip_finished_stages(pipeline) == 1


class TestInputFilesKeyTheCache:
    """A step's cache key covers the contents of the files it reads, not their paths: a
    prompt file edited in place is read again, and everything after it recomputed."""

    def test_an_edited_prompt_file_is_not_served_from_the_cache(self, tmp_path: Path) -> None:
        from agfsync.steps import LoadPrompts

        path = tmp_path / "prompts.jsonl"

        def signature(text: str) -> str:
            path.write_text(text)
            return LoadPrompts(name="load", data_files=str(path)).signature

        first = signature("".join(_sample_lines()[:2]))
        assert signature("".join(_sample_lines()[:2])) == first
        assert signature("".join(_sample_lines()[2:4])) != first

    def test_a_changed_prompt_file_changes_every_later_step(self, tmp_path: Path) -> None:
        pipeline = build_preset("offline")
        prompts = tmp_path / "prompts.jsonl"
        prompts.write_text("".join(line for line in _sample_lines()[:2]))
        pipeline._set_runtime_parameters({"load_prompts": {"data_files": str(prompts)}})
        before = {name: pipeline.dag.get_step(name)["step"].signature for name in pipeline.dag}
        prompts.write_text("".join(line for line in _sample_lines()[2:4]))
        after = {name: pipeline.dag.get_step(name)["step"].signature for name in pipeline.dag}
        assert all(before[name] != after[name] for name in pipeline.dag)

    def test_signatures_are_remembered_until_an_attribute_changes(self, monkeypatch) -> None:
        from distilabel.mixins.signature import SignatureMixin

        pipeline = build_preset("offline")
        step = pipeline.dag.get_step("generate_images")["step"]
        assert step._own_signature() == SignatureMixin.signature.fget(step)
        dumps = []
        original = SignatureMixin.signature.fget

        def counted(self: SignatureMixin) -> str:
            dumps.append(self)
            return original(self)

        monkeypatch.setattr(SignatureMixin, "signature", property(counted))
        first = {name: pipeline.dag.get_step(name)["step"].signature for name in pipeline.dag}
        dumps.clear()
        again = {name: pipeline.dag.get_step(name)["step"].signature for name in pipeline.dag}
        assert again == first and dumps == []  # nothing dumped again: all remembered
        pipeline._set_runtime_parameters({"generate_images": {"num_inference_steps": 7}})
        changed = {name: pipeline.dag.get_step(name)["step"].signature for name in pipeline.dag}
        assert len(dumps) == 1  # only the changed step is dumped again
        assert changed["generate_images"] != first["generate_images"]
        assert changed["judge_images"] != first["judge_images"]  # and it reaches downstream
        assert changed["load_prompts"] == first["load_prompts"]

    def test_the_pipeline_dump_is_remembered_and_its_file_rewritten_on_change(
        self, tmp_path: Path
    ) -> None:
        from agfsync.run.cache import remember_pipeline_dumps

        pipeline = build_preset("offline")
        expected_signature = pipeline.signature
        dumps = []
        original = pipeline.dump

        def counted(**kwargs: Any) -> Any:
            dumps.append(kwargs)
            return original(**kwargs)

        pipeline.dump = counted
        remember_pipeline_dumps(pipeline)
        target = tmp_path / "pipeline.yaml"
        for _ in range(3):  # what distilabel does after every batch
            assert pipeline.signature == expected_signature
            pipeline.save(path=target, format="yaml")
        assert len(dumps) == 1
        written = target.stat().st_mtime_ns
        target.write_text("edited")  # a file that is not the dump any more is written again
        pipeline.save(path=target, format="yaml")
        assert "generate_images" in target.read_text()
        pipeline._set_runtime_parameters({"generate_images": {"num_inference_steps": 7}})
        pipeline.save(path=target, format="yaml")
        assert len(dumps) == 2 and "num_inference_steps: 7" in target.read_text()
        assert target.stat().st_mtime_ns >= written


def _sample_lines() -> list[str]:
    from agfsync.text.prompt_files import SAMPLE_PROMPTS_PATH

    return SAMPLE_PROMPTS_PATH.read_text().splitlines(keepends=True)
