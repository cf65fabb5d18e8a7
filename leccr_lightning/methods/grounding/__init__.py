"""The temporal grounding family (spec grounding_methods): ``base`` (``GroundingDETRBase`` on ``MethodBase``),
``moment_detr``, ``qd_detr`` and the two reconstructions that subclass QD-DETR, ``rgtr`` and ``cdnet``."""
