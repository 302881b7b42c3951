"""Where a config's model is loaded from: one answer for training, merge and sampling.

`model.name_or_path` may be a local directory, a Hub id, or a catalog name such as
`llama-3.2-1b` (the planning commands and the pre-flight checks accept those). from_pretrained
knows only the first two, so a catalog name is turned into its Hub id here, once.
"""

from __future__ import annotations

from pathlib import Path


def model_source(name_or_path: str) -> str:
    """A path or Hub id that from_pretrained accepts: catalog names become their Hub id."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return str(path)
    from ftwiz.core.models import catalog_names, load_model_info

    if name_or_path.lower() in {name.lower() for name in catalog_names()}:
        return load_model_info(name_or_path).hub_id or name_or_path
    return name_or_path
