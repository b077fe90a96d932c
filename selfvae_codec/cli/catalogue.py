"""`selfvae-codec models`: the pretrained models this version ships."""

from __future__ import annotations

import click


@click.command()
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also describe the float weights `default` was made from and the earlier models whose files it reads.",
)
def models(show_all) -> None:
    """List the pretrained models shipped with this version."""
    from ..models.pretrained import RATED_MODES, SUPPORTING_MODELS, carried_by, carrier, registry

    entries = registry()
    if not entries:
        click.echo("no pretrained models are shipped with this build")
        return
    earlier = [name for name, entry in entries.items() if carried_by(entry) is not None]
    float_sources = [name for name in entries if name in SUPPORTING_MODELS]
    supporting = float_sources + earlier
    for name, entry in entries.items():
        if name in supporting and not show_all:
            continue
        bpd, coded = entry.get("validation_bpd"), entry.get("coded_bpsp")
        by_mode = {mode: entry.get(f"{mode}_points") for mode in RATED_MODES}
        if by_mode["rs2"]:
            measured = "; ".join(
                f"{mode} on the validation photos: "
                + ", ".join(f"q{q} {p['bpp']:.3f} bpp {p['psnr']:.2f} dB" for q, p in sorted(points.items()))
                for mode, points in by_mode.items()
                if points
            )
        elif coded is not None:
            measured = f"coded: {coded:.4f} bits/subpixel on the validation photos"
        else:
            measured = f"validation {bpd:.4f} bpd" if bpd is not None else "not validated"
        click.echo(f"{name}: {entry.get('description', '')} [{measured}; {entry['fingerprint'][:12]}]")
    if supporting and not show_all:
        parts = [f"{name}, the float weights `default` was converted from" for name in float_sources]
        by_carrier: dict[str, list[str]] = {}
        for name in earlier:
            by_carrier.setdefault(carrier(name), []).append(name)
        for name, names in by_carrier.items():
            earlier_models = (
                f"{' and '.join(names)}, earlier models" if len(names) > 1 else f"{names[0]}, an earlier model"
            )
            parts.append(f"{earlier_models} whose files `{name}` reads")
        click.echo(f"also shipped: {'; '.join(parts)} (--all)")


COMMANDS = [models]
