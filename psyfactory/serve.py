"""Serve a model with `llamafactory-cli api` on loopback (OpenAI-compatible), for teachers and judges."""

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
    log_path = log_path or workdir / "api.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([lf_cli(), "api", str(workdir / "api.yaml")], cwd=workdir, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + startup_timeout
        url = f"http://127.0.0.1:{port}/v1/models"
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(encoding="utf-8", errors="replace")[-2000:]
                raise RunError(f"llamafactory-cli api exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RunError(f"llamafactory-cli api not ready after {startup_timeout:.0f}s (log: {log_path})")
            time.sleep(0.5)
        yield Endpoint(base_url=f"http://127.0.0.1:{port}/v1", model=model_name)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
