"""Serve a model on loopback behind an OpenAI-compatible API, for teachers and judges:
`llamafactory-cli api` (HF model + adapter) or llama-cpp-python's server (a GGUF)."""

from __future__ import annotations

import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from psyfactory.core.errors import RunError
from psyfactory.core.llm_client import Endpoint, free_port


@contextmanager
def serve_lf_api(
    model_path: str | Path,
    template: str,
    *,
    adapter: str | Path | None = None,
    model_name: str = "psyfactory",
    extra: dict[str, Any] | None = None,
    startup_timeout: float = 240.0,
    log_path: Path | None = None,
) -> Iterator[Endpoint]:
    """Start `llamafactory-cli api` on 127.0.0.1:<free port>; yield its Endpoint; stop it on exit."""
    from psyfactory.runner import lf_cli, lf_env

    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="psy-api-"))
    cfg: dict[str, Any] = {"model_name_or_path": str(model_path), "template": template,
                           "infer_backend": "huggingface", **(extra or {})}
    if adapter:
        cfg.update(adapter_name_or_path=str(adapter), finetuning_type="lora")
    (workdir / "api.yaml").write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    env = lf_env() | {"API_HOST": "127.0.0.1", "API_PORT": str(port), "API_MODEL_NAME": model_name}
    with _serving([lf_cli(), "api", str(workdir / "api.yaml")], "llamafactory-cli api", port, model_name,
                  log_path or workdir / "api.log", startup_timeout, cwd=workdir, env=env) as endpoint:
        yield endpoint


@contextmanager
def serve_gguf(gguf: str | Path, *, port: int | None = None, model_name: str = "teacher", n_ctx: int = 4096,
               startup_timeout: float = 120.0, log_path: Path | None = None) -> Iterator[Endpoint]:
    """Serve a GGUF with llama-cpp-python's OpenAI-compatible server on 127.0.0.1 (`make teacher`).
    Its `response_format={"type": "json_object", "schema": ...}` constrains replies to a JSON schema."""
    import sys

    from psyfactory.gguf.common import check_gguf_file, setup_info

    setup_info()
    gguf = check_gguf_file(gguf)
    port = port or free_port()
    log_path = log_path or Path(tempfile.mkdtemp(prefix="psy-teacher-")) / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
           "--n_ctx", str(n_ctx), "--model_alias", model_name]
    with _serving(cmd, f"llama.cpp server ({gguf.name})", port, model_name, log_path, startup_timeout) as endpoint:
        yield endpoint


@contextmanager
def _serving(cmd: list[str], what: str, port: int, model_name: str, log_path: Path, startup_timeout: float,
             **popen: Any) -> Iterator[Endpoint]:
    """Start `cmd`, wait until GET /v1/models answers, yield the Endpoint, stop the server on exit."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **popen)
    try:
        deadline = time.time() + startup_timeout
        url = f"http://127.0.0.1:{port}/v1/models"
        while True:
            if proc.poll() is not None:
                lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
                raise RunError(f"{what} exited with {proc.returncode}: {lines[-1] if lines else 'no output'} "
                               f"(log: {log_path})")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RunError(f"{what} not ready after {startup_timeout:.0f}s (log: {log_path})")
            time.sleep(0.5)
        yield Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model=model_name)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
