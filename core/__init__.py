"""ftwiz's planning core and training engine: pure Python, never imports Textual."""
