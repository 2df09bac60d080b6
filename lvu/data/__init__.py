"""Video data layer: WebDataset shards (write, index, read), decoding and frame sampling, resumable loading."""
