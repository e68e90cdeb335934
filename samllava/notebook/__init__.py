"""What the notebooks call: the tables and figures of each paper artefact (:mod:`.tables`), the heatmap
explorer (:mod:`.explorer`, :mod:`.widgets`), try-your-own-image (:mod:`.try_image`) and the papermill
runner that executes them all (:mod:`.runner`)."""
