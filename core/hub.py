"""The Hugging Face Hub, as far as planning needs it: is it reachable at all?"""

from __future__ import annotations


def hub_reachable() -> bool:
    """Whether the Hub's host name resolves. Offline, huggingface_hub retries each request for
    ~25 s and logs every retry; this answers at once. False in offline mode."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
    except OSError:
        return False
    return True
