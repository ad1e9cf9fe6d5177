"""Running a preset end to end, and everything around distilabel's run.

- `preset`: preset -> distilabel pipeline -> dataset folder (`agfsync generate`).
- `preflight`: checks before the first paid call; `estimate`: cost before starting.
- `processes`: one run per cache, no orphans, a prompt stop on Ctrl-C.
- `cache`, `artifacts`, `journal`, `resume`, `failures`: a killed or partly failed run
  resumes without redoing finished work.
- `usage`: token usage from distilabel's LLM statistics.
"""
