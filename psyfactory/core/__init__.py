"""The bottom layer: helpers that `psyfactory.plugins`, `psyfactory.data_prep` and the orchestration above them share.

Modules here import only the standard library, third-party packages and each other: never
`psyfactory.plugins`, `psyfactory.data_prep` or the rest of `psyfactory` (tests/test_layering.py checks it).

- `errors`: the user-error classes (one `error:` line, exit 2, printed by `psyfactory.cli.main`)
- `paths`: where the package's own files (configs, schemas, templates) and the user's datasets, runs and caches live
- `files`: atomic writes, JSONL, advisory file locks
- `labels`: JSON label extraction and validation against a label schema
- `llm_client`: OpenAI-compatible chat client with validated-JSON retries
- `backend`: the model interface that eval plugins call (`Backend`)
"""
