// SmartStart web app: progressive enhancement only; every page works without it.
// Escape closes the narrow-screen menu.
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") {
    document.querySelectorAll("details.menu[open]").forEach((menu) => menu.removeAttribute("open"));
  }
});
