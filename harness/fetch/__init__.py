"""``python -m harness.fetch``: what a run or a sweep needs from the Hugging Face hub (the model's
files, each dataset repo), as ``hf download`` lines, fetched where the hub is reachable and
checked where it is not (``needs`` says what and whether it is here, ``cli`` composes and acts)."""
