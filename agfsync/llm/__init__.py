"""LLMs (stages 1, 2 and the VLM judge): providers, clients, and their JSON.

- `providers`: the provider table (names, API-key variables, base URLs).
- `gemini`: a distilabel LLM on the maintained `google-genai` client.
- `json_output`: reading JSON out of what LLMs actually write.
"""
