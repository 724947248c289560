"""A run directory as a chat dataset for SFT: `datasets.load_dataset(RUN_DIR)` is exactly the
selected rows, each with `messages` that render, with the student's chat template, to the
text it was scored on; its card follows the Hub's conventions; TRL tokenizes it."""

import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
import yaml
from transformers import AutoTokenizer

from localnat.curate.job import run_job
from localnat.scoring.student import encode_prompt
from localnat.testing.jobs import config, sample, shards

SYSTEM = "Reason step by step, then give the final answer."


@pytest.fixture(scope="module")
def chat_run(ray_local, tiny_student, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat")
    df = sample(400)
    inputs = shards(tmp / "in", df, rows_per_file=len(df) // 2 + 1)
    cfg = config(tiny_student, [inputs], tmp / "out", run_id="chat", system_prompt=SYSTEM)
    manifest = run_job(cfg)
    return tmp / "out" / "chat", manifest, df


def test_the_run_directory_loads_as_the_selected_rows_with_their_conversations(
    chat_run, tiny_student
):
    from datasets import load_dataset

    run_dir, manifest, df = chat_run
    # another run of the same id elsewhere, choosing otherwise: each directory loads as its
    # own rows (`datasets` caches by folder name and config, not by the files)
    other = config(tiny_student, [run_dir.parents[1] / "in"], run_dir.parents[1] / "other")
    run_job(replace(other, run_id="chat", select_by="global", correct_column=None))
    for where in (run_dir.parents[1] / "other" / "chat", run_dir):
        rows = load_dataset(str(where), split="train").to_pandas()
        selected = pq.read_table(where / "selected").to_pandas()
        assert sorted(rows["row_id"]) == sorted(selected["row_id"])  # those rows, no other
    assert len(rows) == manifest["counts"]["selected"] == df.prompt_id.nunique()
    tok = AutoTokenizer.from_pretrained(tiny_student)
    for row in rows.itertuples():
        turns = list(row.messages)
        assert [t["role"] for t in turns] == ["system", "user", "assistant"]
        assert [t["content"] for t in turns] == [SYSTEM, row.prompt, row.response]
        # the conversation up to the answer is, token for token, what the student scored
        before = tok.apply_chat_template(turns[:-1], tokenize=False, add_generation_prompt=True)
        assert tok(before, add_special_tokens=False)["input_ids"] == encode_prompt(
            tok, row.prompt, SYSTEM
        )
        text = tok.apply_chat_template(turns, tokenize=False)
        assert text.startswith(before) and row.response in text[len(before) :]


def test_the_card_says_what_chose_the_rows_in_the_hubs_conventions(chat_run, tiny_student):
    run_dir, manifest, _ = chat_run
    text = (run_dir / "README.md").read_text()
    assert text.startswith("---\n")  # YAML front matter first
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    (only,) = meta["configs"]
    assert only["data_files"] == [{"split": "train", "path": "selected/*.parquet"}]
    assert meta["size_categories"] == ["n<1K"] and "text-generation" in meta["task_categories"]
    student = manifest["student"]
    assert student["id"] == str(tiny_student)
    for fact in (
        f"`{student['id']}`, digest `{student['digest']}`",
        f"`{manifest['config']['select_by']}`",
        manifest["localnat_version"],
        f"--system-prompt '{SYSTEM}'",
        f"| selected | {manifest['counts']['selected']} |",
        "Teacher leaderboard",
    ):
        assert fact in body, fact
    board = json.loads((run_dir / "teachers.json").read_text())
    assert all(teacher in body for teacher in board["teachers"])


def test_trl_tokenizes_the_selected_rows_as_conversations(chat_run, tiny_student, tmp_path):
    """The way an SFT trainer reads the directory: TRL's SFTTrainer prepares it as a
    conversational dataset; every example's tokens begin with the scored prompt's."""
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    run_dir, _, _ = chat_run
    rows = load_dataset(str(run_dir), split="train").select_columns(["messages", "prompt"])
    tok = AutoTokenizer.from_pretrained(tiny_student)
    args = SFTConfig(output_dir=str(tmp_path), report_to=[], max_length=None, use_cpu=True)
    trainer = SFTTrainer(
        model=tiny_student,
        args=args,
        train_dataset=rows.remove_columns("prompt"),
        processing_class=tok,
    )
    prepared = trainer.train_dataset
    assert len(prepared) == len(rows)
    for example, row in zip(prepared, rows):
        prompt = encode_prompt(tok, row["prompt"], SYSTEM)
        assert example["input_ids"][: len(prompt)] == prompt
        assert row["messages"][-1]["content"] in tok.decode(example["input_ids"][len(prompt) :])
