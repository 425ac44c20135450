"""Models: one card per registry model, from its manifest.

A card shows the architecture, classes and scales, the training data and command, a
warning when the data was a stand-in for GasHisSDB or GCHTID, and the held-out metrics
with the confusion matrix, ROC curve and reliability diagram. A model without usable
weights gets a card with the reason and the command that trains it.
"""

from __future__ import annotations

import streamlit as st

from gastricvision.modelcards import ModelCard, model_card, ordinal
from gastricvision.models import MODEL_SPECS
from ui import charts
from ui.boundary import guard
from ui.resources import ModelSet, models, reload_models

TRAIN_RECIPES = {"binary": "binary", "student": "distill", "tissue": "tissue", "autoencoder": "autoencoder", "unet": "unet"}


def unavailable_card(card: ModelCard) -> None:
    st.info(f"Not available: {card.reason}")
    recipe = TRAIN_RECIPES.get(card.name, card.name)
    st.markdown("Train it and export its weights folder, then press **Reload models**:")
    st.code(f".venv/bin/gastricvision train {recipe} --data DATASET_FOLDER --export weights/{card.name}", language="bash")


def facts(card: ModelCard) -> None:
    manifest = card.manifest
    training = card.training
    st.markdown(
        f"**Architecture** `{manifest.architecture}` · **task** {manifest.task} · "
        f"**tile size** {manifest.tile_size} px · **network input** {manifest.input_size} px"
    )
    if manifest.classes:
        st.markdown(f"**Classes** (in output order): {', '.join(manifest.classes)}")
    st.markdown(
        f"**Calibration temperature** {manifest.temperature:.3f} · **weights** {manifest.dtype}, "
        f"sha256 `{manifest.sha256[:16]}…` · **created** {manifest.created or 'unknown'}"
    )
    st.markdown("**Training data**: " + (", ".join(f"`{item}`" for item in card.datasets) or "not recorded"))
    counts = training.get("counts")
    if isinstance(counts, dict) and counts:
        parts = []
        for split, per_class in counts.items():
            if isinstance(per_class, dict):
                parts.append(f"{split}: " + ", ".join(f"{name} {count}" for name, count in per_class.items()))
        if parts:
            st.caption("Tiles per split and class (crops included): " + "; ".join(parts))
    if card.command:
        st.markdown("**Training command**")
        st.code(card.command, language="bash", wrap_lines=True)


def metrics(card: ModelCard) -> None:
    if card.headline:
        columns = st.columns(len(card.headline))
        for column, (label, value) in zip(columns, card.headline.items()):
            column.metric(label, f"{value:.3f}")
    else:
        st.caption("The manifest records no held-out metrics.")
    if card.split_note:
        st.caption(card.split_note)

    manifest = card.manifest
    plots = []
    if card.confusion_matrix and manifest.classes:
        plots.append(("confusion", charts.confusion_matrix(card.confusion_matrix, manifest.classes, "Confusion matrix (test split)")))
    if card.roc:
        plots.append(("roc", charts.roc_curve(card.roc["fpr"], card.roc["tpr"], card.headline.get("AUROC"), card.roc.get("positive_class", "Abnormal"))))
    if card.reliability:
        plots.append(("reliability", charts.reliability_diagram(card.reliability)))
    if plots:
        columns = st.columns(len(plots))
        for column, (kind, figure) in zip(columns, plots):
            column.plotly_chart(figure, width="stretch", key=f"models_{card.name}_{kind}", config={"displayModeBar": False})

    if card.reconstruction:
        reconstruction = card.reconstruction
        per_class = reconstruction.get("error_per_class") or {}
        if per_class:
            st.markdown("**Mean L1 error per source class** (test split)")
            st.dataframe(
                [{"class": name, "mean error": value, "tiles": reconstruction["count_per_class"].get(name)} for name, value in per_class.items()],
                hide_index=True,
            )
        percentiles = reconstruction.get("training_percentiles") or {}
        if percentiles:
            st.caption(
                "Anomaly score percentiles of the training tiles: "
                + ", ".join(f"{ordinal(float(p))} {value:.4f}" for p, value in percentiles.items())
            )


def card_view(card: ModelCard) -> None:
    status = "" if card.available else " (not available)"
    with st.container(border=True):
        st.subheader(f"{card.name}{status}")
        st.caption(card.description)
        if not card.available:
            unavailable_card(card)
            return
        if card.stand_in and str(card.data_note).lower().startswith("stand-in"):
            st.warning(card.data_note)
        elif card.stand_in:
            st.warning(f"**Stand-in training data.** {card.data_note}")
        elif card.data_note:
            st.info(f"**Training data.** {card.data_note}")
        facts(card)
        metrics(card)


def main() -> None:
    st.title("Models")
    model_set: ModelSet = models()
    header = st.columns([4, 1])
    header[0].markdown(f"Weights folder: `{model_set.weights_dir}`. Metrics come from each model's manifest.")
    if header[1].button("Reload models", help="Read the weights folder again, e.g. after training."):
        reload_models()
        st.rerun()
    for name in MODEL_SPECS:
        loaded = model_set.loaded.get(name)
        with guard(f"model card {name}"):
            card_view(model_card(name, loaded.manifest if loaded else None, model_set.unavailable.get(name)))


main()
