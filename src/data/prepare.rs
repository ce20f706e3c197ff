//! `gpt prepare`: text files, folders and JSONL into train/val token files (next commit).
