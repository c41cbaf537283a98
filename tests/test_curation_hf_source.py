"""The curation ``hf`` kind's loader on ``save_to_disk`` directories (no network, no Ray):
a plain Dataset, a DatasetDict by split, and a missing split named in the error."""

from __future__ import annotations

import datasets
import pytest

from s1ray.curation.input_specs import HFSource, TracesHFInput
from s1ray.curation.pipeline import CurationError
from s1ray.curation.stages.inputs import _load_hf


def _rows(tag: str, n: int) -> dict:
    return {"problem": [f"{tag} question {i}" for i in range(n)], "solution": [str(i) for i in range(n)]}


def test_plain_dataset_dir(tmp_path):
    datasets.Dataset.from_dict(_rows("plain", 3)).save_to_disk(str(tmp_path / "ds"))
    hf = _load_hf(HFSource(name="p", path=str(tmp_path / "ds"), split="whatever"))
    assert hf["problem"] == ["plain question 0", "plain question 1", "plain question 2"]


def test_dataset_dict_dir_picks_the_split(tmp_path):
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict(_rows("train", 4)),
                               "test": datasets.Dataset.from_dict(_rows("test", 2))})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert len(_load_hf(HFSource(name="s", path=str(tmp_path / "dd")))) == 4  # default split: train
    test = _load_hf(TracesHFInput(path=str(tmp_path / "dd"), split="test"))
    assert test["problem"] == ["test question 0", "test question 1"]
    with pytest.raises(CurationError, match=r"split 'validation' not found .*\['test', 'train'\]"):
        _load_hf(HFSource(name="s", path=str(tmp_path / "dd"), split="validation"))
