"""``samllava diagnose``: images and folders in, masks, overlays, reports and a summary out.

:func:`~samllava.diagnose.run.run` is the one entry (the command line and the try-your-own-image panel
both call it); :mod:`.files` reads images and writes outputs; :mod:`.report` turns a diagnosis into
report.json's fields."""
