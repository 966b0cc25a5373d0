"""contentpipe.generation: the generation service (turns prompts into media through Replicate)."""
