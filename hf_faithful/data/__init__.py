"""Generated datasets: ZoomVQA, the zoom-needed / global visual QA set of the reference VLM."""
