# Two entry points for a fresh machine; each creates .venv when it is missing or stale.
#   make app    start the Streamlit app on http://localhost:8501
#   make test   run the whole test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
PORT ?= 8501
# Loopback only by default; ADDRESS=0.0.0.0 serves the app to other machines (a class).
ADDRESS ?= 127.0.0.1

.PHONY: app test env clean-env

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $(STAMP)

app: $(STAMP)
	@if [ -f app/Home.py ]; then \
		$(VENV)/bin/streamlit run app/Home.py --server.port $(PORT) --server.address $(ADDRESS); \
	else \
		echo "The app is not there yet (app/Home.py is missing); use the gastricvision command meanwhile."; \
	fi

test: $(STAMP)
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

clean-env:
	rm -rf $(VENV)
