"""Files from outside the repository: weight resolution (a local path, a packaged asset or a verified
download; :mod:`.weights`), resumable verified downloads (:mod:`.download`) and the data sets' released
archives (:mod:`.datasets`). ``tiny_tokenizer/`` is the tiny profile's packaged tokenizer."""
