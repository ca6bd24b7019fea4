"""Will it fit? Model facts, the deployment plan, ``auto``, the checked plan a run starts from."""
