"""Temporal sentence grounding data (spec grounding_methods §5): annotation records and their readers
(``annotations``), span geometry (``spans``), clip and query feature stores (``features``), saliency labels and
the hinge-pair sampler (``saliency``), RGTR's span anchors (``anchors``), the query-level Dataset and its collate
(``dataset``), the DataModule (``datamodule``) and the synthetic collection writer (``synthetic``)."""
