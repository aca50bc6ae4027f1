"""Model folders that can run code: Python shipped with the model (auto_map) and pickle weights.
Both are refused unless the run opts in (student/teacher.trust_remote_code, .allow_pickle_weights);
with the opt-in the real loaders (doctor, engines, training) use them."""

import json
import shutil

import torch
from conftest import REPO, cli_in_process
from transformers import AutoModelForCausalLM

from llm2llm.config import SamplingConfig, TrainConfig
from llm2llm.engines import TransformersGenerator
from llm2llm.models import fingerprint
from llm2llm.training import TrainRequest, _load_model

CUSTOM_CODE = """
from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

Path(MARKER).touch()  # transformers imports a copy of this file: the test's folder is named here


class CustomConfig(LlamaConfig):
    model_type = "custom-llama"


class CustomForCausalLM(LlamaForCausalLM):
    config_class = CustomConfig
"""
PROMPTS = ["play some jazz in the kitchen", "what is the weather in paris"]


def remote_code_folder(tiny_model, tmp_path):
    folder = tmp_path / "custom-model"
    shutil.copytree(tiny_model, folder)
    (folder / "modeling_custom.py").write_text(CUSTOM_CODE.replace("MARKER", repr(str(folder / "code-ran"))))
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="custom-llama",
        architectures=["CustomForCausalLM"],
        auto_map={
            "AutoConfig": "modeling_custom.CustomConfig",
            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def pickle_folder(tiny_model, tmp_path):
    folder = tmp_path / "pickled-model"
    shutil.copytree(tiny_model, folder)
    for file in folder.glob("*.safetensors"):
        file.unlink()
    # transformers 5 saves safetensors only; a pickle checkpoint as older tools and hubs ship them:
    torch.save(AutoModelForCausalLM.from_pretrained(tiny_model).state_dict(), folder / "pytorch_model.bin")
    assert (folder / "pytorch_model.bin").exists() and not list(folder.glob("*.safetensors"))
    return folder


def validate(tmp_path, data_dir, *args):
    return cli_in_process(
        "validate",
        "--profile",
        "tiny",
        "--data-dir",
        str(data_dir),
        "--runs-dir",
        str(tmp_path / "runs"),
        *args,
        cwd=REPO,
        check=False,
    )


def assert_refused(tmp_path, data_dir, setting, *messages):
    refused = validate(tmp_path, data_dir, "--set", setting)
    assert refused.returncode == 2 and refused.stderr.count("error:") == 1, refused.stderr
    assert all(message in refused.stderr for message in messages), refused.stderr


def greedy(generator):
    return generator.generate(PROMPTS, SamplingConfig(max_new_tokens=6), [0, 0])


def test_model_code_is_refused_unless_trusted_and_then_it_runs(tiny_model, data_dir, tmp_path):
    folder = remote_code_folder(tiny_model, tmp_path)
    assert_refused(
        tmp_path,
        data_dir,
        f"teacher.model={folder}",
        "teacher.trust_remote_code=true",
        "needs the Python code in its folder (auto_map: AutoConfig, AutoModelForCausalLM)",
    )
    assert not (folder / "code-ran").exists()

    trusted = validate(
        tmp_path, data_dir, "--set", f"teacher.model={folder}", "--set", "teacher.trust_remote_code=true"
    )
    assert trusted.returncode == 0, trusted.stderr
    generator = TransformersGenerator(folder, options={"trust_remote_code": True})
    assert (folder / "code-ran").exists() and generator.model_class == "CustomForCausalLM"
    assert greedy(generator) == greedy(
        TransformersGenerator(tiny_model)
    )  # the same weights, loaded by the folder's code
    request = TrainRequest(folder, [], None, TrainConfig(), tmp_path / "out", loading={"trust_remote_code": True})
    assert type(_load_model(request, torch.float32)).__name__ == "CustomForCausalLM"
    assert fingerprint(folder) != fingerprint(tiny_model)


def test_pickle_weights_are_refused_unless_allowed_and_then_load(tiny_model, data_dir, tmp_path):
    folder = pickle_folder(tiny_model, tmp_path)
    assert_refused(
        tmp_path,
        data_dir,
        f"student.model={folder}",
        "allow_pickle_weights=true",
        "has only pickle weights (pytorch_model.bin), which can run code when loaded",
    )

    allowed = validate(
        tmp_path, data_dir, "--set", f"student.model={folder}", "--set", "student.allow_pickle_weights=true"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert greedy(TransformersGenerator(folder, options={"allow_pickle_weights": True})) == greedy(
        TransformersGenerator(tiny_model)
    )
    request = TrainRequest(folder, [], None, TrainConfig(), tmp_path / "out", loading={"allow_pickle_weights": True})
    assert _load_model(request, torch.float32).num_parameters() > 0
    try:  # without the opt-in the loader itself refuses the file too, not only the pre-flight
        TransformersGenerator(folder)
    except OSError as e:
        assert "safetensors" in str(e)
    else:
        raise AssertionError("pickle weights loaded without the opt-in")
