"""Home: what the tool does, which models are loaded, and how to add data and weights."""

from __future__ import annotations

import streamlit as st

from gastricvision.browsing import DATA_ROOTS_ENV, configured_roots
from gastricvision.modelcards import model_card
from gastricvision.models import MODEL_SPECS
from ui.resources import models

TRAIN_COMMANDS = """\
GV=.venv/bin/gastricvision
$GV data download gashissdb --dest ~/data/GasHisSDB
$GV data download gchtid --dest ~/data/GCHTID
$GV train binary --data ~/data/GasHisSDB --size 160 --export weights/binary
$GV train distill --teacher weights/binary --data ~/data/GasHisSDB --size 160 \\
    --export weights/student
$GV train tissue --data ~/data/GCHTID --export weights/tissue
$GV train autoencoder --data ~/data/GasHisSDB --size 160 --data ~/data/GCHTID \\
    --export weights/autoencoder
$GV train unet --data ~/data/GasHisSDB --size 160 --data ~/data/GCHTID --export weights/unet"""


def intro() -> None:
    st.title("GastricVision")
    st.markdown(
        "GastricVision shows gastric H&E histopathology tiles next to what several neural "
        "networks make of them: a Normal vs Abnormal (cancer) probability, tissue-type "
        "probabilities over the eight GCHTID classes, reconstructions by an autoencoder and "
        "a U-Net with their error maps, and class activation maps that show which regions "
        "drove a prediction. It is meant for image review, teaching and error analysis."
    )
    st.warning("GastricVision is a research tool, not a diagnostic device. Do not use it for patient care.")
    st.markdown(
        "- **Review**: one tile at a time, from uploads or a dataset folder, with every model's output.\n"
        "- **Gallery and errors**: a dataset's tiles filtered by class, prediction and confidence, "
        "a confusion matrix, a map of the classifier's features and each tile's nearest neighbours.\n"
        "- **Teaching quiz**: students classify tiles, then see the truth, the model's answer and its map.\n"
        "- **Batch scoring**: a folder or a zip of tiles scored into a table and a CSV file.\n"
        "- **Models**: what each model is, what data trained it and how well it did."
    )


def model_table() -> None:
    model_set = models()
    st.header("Models")
    st.caption(f"Weights folder: `{model_set.weights_dir}`")
    rows = []
    cards = []
    for name in MODEL_SPECS:
        loaded = model_set.loaded.get(name)
        card = model_card(name, loaded.manifest if loaded else None, model_set.unavailable.get(name))
        cards.append(card)
        manifest = card.manifest
        rows.append(
            {
                "model": name,
                "status": "loaded" if card.available else "not available",
                "what it does": card.description,
                "architecture": manifest.architecture if manifest else "",
                "tile size (px)": str(manifest.tile_size) if manifest else "",
                "trained on": ", ".join(card.datasets) if manifest else "",
            }
        )
    st.dataframe(rows, hide_index=True, width="stretch")

    missing = [f"- **{card.name}**: {card.reason}" for card in cards if not card.available]
    if missing:
        st.info("Not available, so their panels are left out:\n" + "\n".join(missing))

    # Models trained together usually share one data note; show each note once.
    notes: dict[tuple[bool, str], list[str]] = {}
    for card in cards:
        if card.available and card.data_note:
            notes.setdefault((card.stand_in, card.data_note), []).append(card.name)
    for (stand_in, note), names in notes.items():
        listed = ", ".join(names)
        if stand_in:
            st.warning(f"**{listed}: stand-in training data.** {note}")
        else:
            st.info(f"**{listed}: training data.** {note}")


def data_help() -> None:
    st.header("Your data")
    roots = configured_roots()
    if roots:
        listed = ", ".join(f"`{root}`" for root in roots)
        st.markdown(f"The app may open dataset folders inside {listed}.")
    else:
        st.markdown("No dataset folders are configured yet.")
    st.markdown(
        f"Set `{DATA_ROOTS_ENV}` to the folders the app may browse (several separated by `:`) "
        "before starting it; without it, `~/data` is used when it exists. Then type the "
        "dataset's folder, relative to that folder, in the sidebar. GasHisSDB "
        "(`<root>/160/Normal`, `<root>/160/Abnormal`), GCHTID (`HMU-GC-HE-30K/all_image/<CLASS>`) "
        "and any folder with one sub-folder of images per class are recognised. Single tiles "
        "can be uploaded on the Review and Batch pages without any folder."
    )
    st.code(f"{DATA_ROOTS_ENV}=~/data make app", language="bash")


def training_help() -> None:
    st.header("Train proper weights")
    st.markdown(
        "Models trained on the full GasHisSDB and GCHTID downloads replace the shipped "
        "weights. Each command writes a weights folder with a manifest that records the data, "
        "the command and the held-out metrics; restart the app, or press **Reload models** on "
        "the Models page, to use them. Set `GASTRICVISION_WEIGHTS` to load another weights folder."
    )
    st.code(TRAIN_COMMANDS, language="bash")
    st.caption("`gastricvision train RECIPE --help` lists the options of each recipe.")


intro()
model_table()
data_help()
training_help()
