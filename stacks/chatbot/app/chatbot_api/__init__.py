"""The AI chatbot API of design doc 002: conversations and messages in SQLite, answers from an
OpenAI-style LLM endpoint, Prometheus metrics. Run: `python3 -m uvicorn chatbot_api.main:app`."""
