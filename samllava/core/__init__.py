"""The base every layer stands on: typed profiles (:mod:`.config`), where the model runs
(:mod:`.device`, :mod:`.batching`, :mod:`.distributed`), seeds (:mod:`.seeding`), content-keyed caching
(:mod:`.memo`), where files live (:mod:`.paths`) and how results are written with their provenance
(:mod:`.results`, :mod:`.provenance`)."""
