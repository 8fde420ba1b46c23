"""load_deepeyes on DeepEyes' released parquet layout (fixtures in tests/fixtures/deepeyes,
built by make_fixtures.py there, which cites where the layout comes from)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset, load_dataset
from PIL import Image

from hf_faithful.sccm.data import DEEPEYES_SYSTEM_PROMPT, load_deepeyes, with_prompt_column

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "deepeyes"


def _fixtures_module():
    spec = importlib.util.spec_from_file_location(
        "deepeyes_fixtures", FIXTURES / "make_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


fixtures = _fixtures_module()
TOOLBOX = fixtures.FILES["visual_toolbox"]
THINKLITE = fixtures.FILES["thinklite"]


@pytest.mark.parametrize("name", sorted(fixtures.FILES))
def test_fixture_files_hold_the_deepeyes_layout(name):
    table = pq.read_table(fixtures.FILES[name])
    # the committed files are what make_fixtures.py builds (no drift)
    assert table.equals(fixtures.build_table(name))
    schema = table.schema
    assert schema.names == [
        "data_source",
        "prompt",
        "images",
        "ability",
        "env_name",
        "reward_model",
        "extra_info",
    ]
    image = schema.field("images").type.value_type
    assert image == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("reward_model").type.get_field_index("ground_truth") >= 0
    extra = schema.field("extra_info").type
    assert [extra.field(i).name for i in range(extra.num_fields)] == [
        "split",
        "index",
        "answer",
        "question",
    ]
    assert extra.field("index").type == pa.int64()
    # no Hugging Face Image feature in the metadata, as in DeepEyes' files
    assert b"huggingface" not in (schema.metadata or {})
    # the user turn wraps the question, as DeepEyes' preprocessing writes it
    row = table.slice(0, 1).to_pylist()[0]
    assert row["prompt"][1]["content"].startswith("<image>\n\nQuestion:\n")
    assert not Path(row["images"][0]["path"]).exists()


def test_load_deepeyes_parquet_rows():
    rows = load_deepeyes(TOOLBOX)
    assert rows.column_names == ["prompt", "image", "question", "answer", "data_source"]
    assert len(rows) == 3
    first = rows[0]
    # the clean question of extra_info, not the user turn with <image> and instructions
    assert first["question"] == "What is the color of the umbrella?"
    assert first["prompt"] == [
        {"role": "system", "content": DEEPEYES_SYSTEM_PROMPT},
        {"role": "user", "content": "What is the color of the umbrella?"},
    ]
    assert first["answer"] == "The umbrella is red."  # reward_model.ground_truth
    image = first["image"]
    assert isinstance(image, Image.Image) and image.size == (96, 64)
    # decoded from the stored bytes (the stored path does not exist here)
    r, g, b = image.convert("RGB").getpixel((90, 60))
    assert r > 180 and g < 80 and b < 80
    assert rows[2]["question"].endswith("C. 2021") and rows[2]["answer"] == "B"
    assert rows["data_source"] == ["vstar", "vstar", "chart"]


def test_load_deepeyes_glob_of_shards_and_filter_by_subset():
    rows = load_deepeyes(str(FIXTURES / "*.parquet"))
    assert len(rows) == 4
    math = rows.filter(lambda r: r["data_source"] == "thinklite_eureka")
    assert math["answer"] == ["12"] and math[0]["image"].size == (48, 48)


def test_load_deepeyes_from_save_to_disk_and_memory(tmp_path):
    raw = load_dataset("parquet", data_files=str(TOOLBOX), split="train")
    raw.save_to_disk(tmp_path / "raw")
    from_disk = load_deepeyes(tmp_path / "raw")
    in_memory = load_deepeyes(raw, system_prompt=None)
    assert from_disk["question"] == in_memory["question"] == load_deepeyes(TOOLBOX)["question"]
    assert in_memory[0]["prompt"] == [
        {"role": "user", "content": "What is the color of the umbrella?"}
    ]
    assert from_disk[1]["image"].size == (64, 96)


def test_load_deepeyes_rows_without_question_or_image_name_the_columns():
    table = fixtures.build_table("thinklite")
    no_question = Dataset.from_dict(
        {"images": table.column("images").to_pylist(), "answer": ["12"]}
    )
    with pytest.raises(ValueError, match="no question"):
        load_deepeyes(no_question)
    no_image = Dataset.from_dict({"question": ["q"], "answer": ["a"]})
    with pytest.raises(ValueError, match="no image"):
        load_deepeyes(no_image)
    with pytest.raises(ValueError, match="empty"):
        load_deepeyes(Dataset.from_dict({"question": [], "image": []}))


def test_load_deepeyes_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="Hub dataset"):  # offline in tests
        load_deepeyes("nobody/no-such-dataset")
    with pytest.raises(ValueError, match=r"\.parquet file"):
        load_deepeyes(str(tmp_path / "train.json"))


def test_with_prompt_column_matches_load_deepeyes():
    rows = load_deepeyes(TOOLBOX)
    plain = rows.remove_columns("prompt")
    assert with_prompt_column(plain)["prompt"] == rows["prompt"]
