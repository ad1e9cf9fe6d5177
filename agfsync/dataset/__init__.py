"""A dataset folder (stage 6): what a finished run becomes, and how it reaches the Hub.

- `folder`: writes the folder (parquet shards in the Hub's layout, images, `run.json`).
- `card`: its README.md; `statistics` and `plots`: the numbers and figures on the card.
- `run_info`: `run.json`, what the run was.
- `publish`: reads a finished folder back and uploads it as a Hub dataset repository.
"""
