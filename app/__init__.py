"""The hora explorer (Gradio). A thin UI over hora's public API."""
