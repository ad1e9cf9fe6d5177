"""Diffusion-DPO training on agfsync's preference datasets (installs as `agfsync.train`).

Run it with `agfsync train`, `python -m agfsync.train.dpo` or
`accelerate launch -m agfsync.train.dpo`; from Python, `agfsync.train.loop.train(config)`
with an `agfsync.train.config.DPOTrainingConfig`.

Modules: `config` (options and their sourced defaults), `loss` (the objective), `data`
(columns, ties, bad images, paired augmentation, batches), `models` (SD/SDXL loading,
conditioning, LoRA and the reference model), `latents_cache`, `loop` (accelerate),
`outputs` (LoRA or pipeline, model card, Hub), `dpo` (command line).
"""
