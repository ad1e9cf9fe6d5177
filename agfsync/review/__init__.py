"""Human review (stage 6): people check the AI's pairs, and their verdicts tune the judges.

- `verdicts`: what reviewers see and what their answers mean (binarization, agreement).
- `argilla`: pairs pushed to an Argilla server, verdicts pulled back.
- `calibration`: judge weights learnt from verdicts (`agfsync calibrate`).
- `reselect`: a finished dataset's pairs chosen again with other weights.
"""
