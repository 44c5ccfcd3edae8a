"""The image recipes (Dockerfiles, hash-locked requirements, the base script), shipped inside the
modelforge wheel as the package ``modelforge_images`` so an installed `mf` builds the same images
with the same content tags as a checkout."""
