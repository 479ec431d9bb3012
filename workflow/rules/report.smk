# Snakemake's HTML report (`snakemake --report`, docs/report.md): what its first page (../report/workflow.rst) needs
# beyond Snakemake's own reStructuredText directives. Which outputs the report shows: the stage table's `report`
# fields (common.smk, `reported`).

import base64
import mimetypes

from docutils.parsers.rst import directives
from docutils.parsers.rst.directives.images import Image


class EmbeddedImage(Image):
    """`.. asrflow-image:: results/summary.png`: the image inside the page, as a data: URI (the path is relative to
    the working directory, the project root). Snakemake's own `embeddedimage` sets the URI only after docutils has
    built the image node (Snakemake 9.27, docutils 0.22), so the page shows a broken image instead."""

    def run(self):
        path = self.arguments[0]
        mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
        with open(path, "rb") as image:
            self.arguments[0] = f"data:{mime};base64,{base64.b64encode(image.read()).decode('ascii')}"
        return super().run()


directives.register_directive("asrflow-image", EmbeddedImage)
