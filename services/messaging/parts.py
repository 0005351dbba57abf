"""What one messaging process's handlers and routes share: its settings, the secret box,
the provider routes (providers/routing.py) and the link signer (domain/links.py)."""

from __future__ import annotations

from services.messaging.domain.links import LinkSigner
from services.messaging.providers.routing import Routes
from services.messaging.secrets import SecretBox
from services.messaging.settings import MessagingSettings


class Messaging:
    def __init__(self, settings: MessagingSettings) -> None:
        self.settings = settings
        self.box = SecretBox(settings.secrets)
        self.routes = Routes(settings, self.box)
        self._links = LinkSigner(self.box.token_key, settings.messaging_public_url)

    @property
    def links(self) -> LinkSigner:
        """Signed with the current key, for the public URL as the settings say now."""
        if self._links.public_url != self.settings.messaging_public_url:
            self._links = LinkSigner(self.box.token_key, self.settings.messaging_public_url)
        return self._links

    async def close(self) -> None:
        await self.routes.close()
