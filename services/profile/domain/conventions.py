"""Per-workspace conventions: which events count as orders, refunds, surveys (pure)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.revenue import revenue_value


class Conventions(BaseModel):
    """Defaults follow Segment's e-commerce spec; each workspace may override them."""

    model_config = ConfigDict(extra="forbid")

    order_events: list[str] = Field(default=["Order Completed"], min_length=1, max_length=20)
    refund_events: list[str] = Field(default=["Order Refunded"], max_length=20)
    revenue_properties: list[str] = Field(
        default=["revenue", "total"], min_length=1, max_length=10,
        description="Order value: the first of these properties that holds a number.")
    nps_events: list[str] = Field(default=["NPS Survey Submitted", "Survey Responded"],
                                  max_length=20)
    nps_property: str = Field(default="score", min_length=1, max_length=100)
    phone_region: str | None = Field(
        default=None, pattern=r"^[A-Z]{2}$",
        description="ISO country for phone numbers written without +country code.")
    default_purchase_interval_days: float = Field(
        default=30, gt=0, le=3650,
        description="Purchase rhythm assumed until a customer has two orders.")
    at_risk_after: float = Field(default=1.5, gt=0, description="x the customer's rhythm")
    lapsed_after: float = Field(default=3.0, gt=0, description="x the customer's rhythm")
    churned_after: float = Field(default=6.0, gt=0, description="x the customer's rhythm")
    ltv_horizon_days: int = Field(default=365, ge=1, le=3650)
    timezone: str = Field(
        default="UTC", min_length=1, max_length=64,
        description="The workspace time zone (IANA name): KPI days, weeks and months, and the "
                    "zone campaigns and templates use.")
    currency: str | None = Field(
        default=None, pattern=r"^[A-Z]{3}$",
        description="The workspace currency (ISO 4217); orders in another one are counted "
                    "apart in the KPIs. None: the currency of the first order seen.")
    attribution_click_window: timedelta = Field(
        default=timedelta(days=5), description="ISO 8601 duration: an order is attributed to "
        "the message last clicked within this long before it ...")
    attribution_open_window: timedelta = Field(
        default=timedelta(days=1), description="... else to the one last opened within this.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as "
                             "Europe/Berlin)") from exc
        return value

    @field_validator("attribution_click_window", "attribution_open_window")
    @classmethod
    def _sane_window(cls, value: timedelta) -> timedelta:
        if not timedelta(0) < value <= timedelta(days=90):
            raise ValueError("must be positive and at most P90D")
        return value

    @model_validator(mode="after")
    def _stages_in_order(self) -> Conventions:
        if not self.at_risk_after < self.lapsed_after < self.churned_after:
            raise ValueError("need at_risk_after < lapsed_after < churned_after")
        return self


def order_value(properties: dict[str, Any], conventions: Conventions) -> float:
    """The first revenue property holding a number (strings like "12.5" count); else 0."""
    return revenue_value(properties, conventions.revenue_properties)
