"""Built-in AI backends: the offline FAQ (``faq``, the default) and any
OpenAI-compatible Chat Completions endpoint (``openai``)."""
