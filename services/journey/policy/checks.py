"""Checks a journey document against the other services and the contact policy when it is
saved: every template a `send` names exists in messaging (on the same channel), every
segment an entry or exit rule names exists in profile (each only when that service's URL is
configured), and a journey cap looser than the policy's gets a warning (the stricter one
applies)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from services.journey.domain.document import EventRule, JourneyDocument
from services.journey.domain.policy import ContactPolicy, TemplateMeta
from services.journey.policy import store
from services.journey.policy.directory import Directory, Unknown
from shared.http.problems import Problem


def _rules(doc: JourneyDocument) -> list[tuple[str, EventRule]]:
    out = [(f"stages.{i}.enter", s.enter) for i, s in enumerate(doc.stages)]
    return out + [(f"exit_when.{i}", r) for i, r in enumerate(doc.exit_when)]


async def check_references(directory: Directory, workspace_id: str, doc: JourneyDocument,
                           caller: str | None) -> dict[str, TemplateMeta]:
    """The templates' facts; a 400 naming the field for an unknown template or segment."""
    errors, metas = [], {}
    if directory.settings.messaging_url:
        for s_index, stage in enumerate(doc.stages):
            for index, step in enumerate(stage.steps):
                if step.send is None:
                    continue
                field = f"stages.{s_index}.steps.{index}.send"
                try:
                    meta = await directory.template(workspace_id, step.send.template,
                                                    caller=caller)
                except Unknown:
                    errors.append({"field": f"{field}.template",
                                   "message": f"unknown template '{step.send.template}'"})
                    continue
                if meta.channel != step.send.channel:
                    errors.append({"field": f"{field}.channel", "message":
                                   f"template '{step.send.template}' is {meta.channel}"})
                metas[step.send.template] = meta
    if directory.settings.profile_url:
        for where, rule in _rules(doc):
            for kind in ("segment_entered", "segment_exited"):
                key = getattr(rule, kind)
                if key and not await directory.segment_exists(workspace_id, key,
                                                              caller=caller):
                    errors.append({"field": f"{where}.{kind}",
                                   "message": f"unknown segment '{key}'"})
    if errors:
        raise Problem(400, "Invalid journey", "; ".join(
            f"{e['field']}: {e['message']}" for e in errors[:5]), errors=errors)
    return metas


async def cap_warnings(conn: AsyncConnection, workspace_id: str, doc: JourneyDocument
                       ) -> list[str]:
    loaded = (await store.load_policies(conn, [workspace_id])).get(workspace_id)
    return looser_caps(doc, loaded.policy) if loaded else []


def looser_caps(doc: JourneyDocument, policy: ContactPolicy) -> list[str]:
    """A journey cap that allows more than a policy cap on the same channel over at least
    as long a window: accepted, and the policy's applies."""
    out = []
    for channel, cap in doc.frequency_cap.items():
        for index, rule in enumerate(policy.caps):
            per = rule.per if isinstance(rule.per, timedelta) else timedelta(days=1)
            if rule.channel == channel and rule.topic is None and cap.per <= per \
                    and cap.max > rule.max:
                out.append(f"frequency_cap.{channel}: looser than the policy's caps.{index}; "
                           f"the stricter applies")
    return out
