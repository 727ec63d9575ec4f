"""Raw dataset parsers: raw files -> data/*.jsonl + dataset_info.json."""
