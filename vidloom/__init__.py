"""vidloom: video curation, captioning and training for Seedance-style video generation."""
