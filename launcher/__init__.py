"""The command line and process orchestration around the llm2llm library."""
