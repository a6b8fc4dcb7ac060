"""The dashboard's panes: each a titled box around one LineTable."""

from fleet.tui.panes.base import Pane
from fleet.tui.panes.distributors import DistributorsPane
from fleet.tui.panes.events import EventsPane
from fleet.tui.panes.jobs import JobsPane
from fleet.tui.panes.machines import MachinesPane
from fleet.tui.panes.nodes import NodesPane
from fleet.tui.panes.sites import SitesPane

__all__ = ["Pane", "MachinesPane", "NodesPane", "JobsPane", "DistributorsPane", "EventsPane",
           "SitesPane"]
