"""Ready-made request/response models at LitServe's import path (``litserve.schema.image``)."""
