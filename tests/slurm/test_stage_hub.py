"""`make stage` downloads through huggingface_hub, which honours HF_ENDPOINT (a mirror), or ModelScope
with USE_MODELSCOPE_HUB=1 (no cluster and no internet needed: a loopback "hub" and a stand-in module)."""

from __future__ import annotations

import http.server
import sys
import threading
import types

import pytest
import yaml
from psyutil import one_error_line, psy


@pytest.fixture
def fake_hub():
    """Answers every request with 404 and remembers the paths."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            seen.append(self.path)
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_HEAD = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", seen
    httpd.shutdown()


def test_stage_downloads_from_hf_endpoint(workspace, fake_hub):
    url, seen = fake_hub
    profile = workspace / "profile.yaml"
    profile.write_text(yaml.safe_dump({"hf_home": str(workspace / "hf")}))
    proc = psy("stage", "--model", "qwen3-4b", "--task", "psydt", "--hw", "cpu", check=False,
               env={"HF_ENDPOINT": url, "PSY_SLURM_PROFILE": str(profile), "HF_HUB_OFFLINE": ""})
    err = one_error_line(proc)
    assert f"cannot download Qwen/Qwen3-4B from {url}" in err and "hf-mirror.com" in err
    assert any(p.startswith("/api/models/Qwen/Qwen3-4B") for p in seen), seen  # the mirror was asked


def test_modelscope_downloads_into_the_model_store(tmp_path, monkeypatch):
    from psyfactory.core.errors import SlurmError
    from psyfactory.slurm.stage import download_model

    calls = []
    fake = types.ModuleType("modelscope")
    fake.snapshot_download = lambda model_id, **kw: calls.append((model_id, kw)) or kw["local_dir"]
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    monkeypatch.delenv("PSY_MODEL_DIR", raising=False)
    with pytest.raises(SlurmError, match="set PSY_MODEL_DIR"):
        download_model("Qwen/Qwen3-4B", tmp_path / "hf")
    monkeypatch.setenv("PSY_MODEL_DIR", str(tmp_path / "store"))
    assert download_model("Qwen/Qwen3-4B", tmp_path / "hf") == tmp_path / "store" / "Qwen" / "Qwen3-4B"
    assert calls[0][0] == "Qwen/Qwen3-4B" and calls[0][1]["local_dir"] == str(tmp_path / "store" / "Qwen" / "Qwen3-4B")
    # where the jobs look for it (psyfactory.models: $PSY_MODEL_DIR/<hub id>)
    from psyfactory.models import resolve_model_path

    (tmp_path / "store" / "Qwen" / "Qwen3-4B").mkdir(parents=True)
    (tmp_path / "store" / "Qwen" / "Qwen3-4B" / "config.json").write_text("{}")
    assert resolve_model_path("qwen3-4b", "Qwen/Qwen3-4B") == str(tmp_path / "store" / "Qwen" / "Qwen3-4B")


def test_modelscope_uses_the_model_yaml_id(tmp_path, monkeypatch):
    """Llama 3.1 is `LLM-Research/Meta-Llama-3.1-8B-Instruct` on ModelScope: stage asks for that id and stores
    the weights under the HF hub id, where the jobs look."""
    from psyfactory.slurm.stage import download_model

    calls = []
    fake = types.ModuleType("modelscope")
    fake.snapshot_download = lambda model_id, **kw: calls.append((model_id, kw)) or kw["local_dir"]
    monkeypatch.setitem(sys.modules, "modelscope", fake)
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    monkeypatch.setenv("PSY_MODEL_DIR", str(tmp_path / "store"))
    got = download_model("meta-llama/Llama-3.1-8B-Instruct", tmp_path / "hf", "LLM-Research/Meta-Llama-3.1-8B-Instruct")
    assert calls[0][0] == "LLM-Research/Meta-Llama-3.1-8B-Instruct"
    assert got == tmp_path / "store" / "meta-llama" / "Llama-3.1-8B-Instruct"
    monkeypatch.setitem(sys.modules, "modelscope", None)  # not installed: one line naming the install command
    with pytest.raises(Exception, match=r"^USE_MODELSCOPE_HUB=1 needs the modelscope package: pip install modelscope$"):
        download_model("Qwen/Qwen3-4B", tmp_path / "hf", "Qwen/Qwen3-4B")


def test_make_stage_passes_the_modelscope_id(workspace, monkeypatch):
    from psyutil import cli

    from psyfactory.slurm import stage

    seen = []
    monkeypatch.setattr(stage, "download_model", lambda hub_id, hf_home, ms_id=None, out=None: seen.append((hub_id, ms_id))
                        or workspace / "weights")
    monkeypatch.setattr(stage, "prepare", lambda req, overrides: {"tokenized_path": "t", "tokenized": "skipped"})
    profile = workspace / "profile.yaml"
    profile.write_text(yaml.safe_dump({"hf_home": str(workspace / "hf")}))
    monkeypatch.setenv("PSY_SLURM_PROFILE", str(profile))
    monkeypatch.setenv("USE_MODELSCOPE_HUB", "1")
    res = cli("stage", "--model", "llama3.1-8b-instruct", "--task", "psydt", "--hw", "cpu")
    assert seen == [("meta-llama/Llama-3.1-8B-Instruct", "LLM-Research/Meta-Llama-3.1-8B-Instruct")]
    assert "[psy] model: LLM-Research/Meta-Llama-3.1-8B-Instruct (ModelScope) -> " in res.stdout


def test_every_hub_model_names_its_modelscope_id_as_llamafactory_does():
    """Each model YAML with a hub id carries psy.modelscope_id and a licence; the id is the one LLaMA-Factory's
    own registry (extras/constants.py, DownloadSource.MODELSCOPE) gives for the same weights."""
    import importlib.util
    import re
    from pathlib import Path

    from psyfactory import layers

    spec = importlib.util.find_spec("llamafactory")  # its file only: importing LLaMA-Factory takes seconds
    text = (Path(spec.origin).parent / "extras" / "constants.py").read_text(encoding="utf-8")
    registry = dict(re.findall(r'DownloadSource\.DEFAULT: "([^"]+)",\s*DownloadSource\.MODELSCOPE: "([^"]+)"', text))
    registry = {k.replace("Meta-Llama-3.1", "Llama-3.1"): v for k, v in registry.items()}  # HF renamed the repo
    checked = 0
    for name in layers.list_names("model"):
        cfg = layers.load_layer(layers.layer_path("model", name))
        ref, psy = str(cfg["model_name_or_path"]), cfg.get("psy") or {}
        if ref.startswith("builtin:"):
            continue
        assert psy.get("modelscope_id"), f"configs/models/{name}.yaml: no psy.modelscope_id"
        assert psy.get("licence"), f"configs/models/{name}.yaml: no psy.licence"
        assert registry.get(ref) == psy["modelscope_id"], (name, ref, registry.get(ref))
        checked += 1
    assert checked == 11
