"""Everything that builds the bundled demo model: corpus, tokenizer, training, quality."""
