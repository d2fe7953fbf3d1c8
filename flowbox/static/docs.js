// Swagger UI for /schema, from the package's own files (no CDN). The API key entered under
// "Authorize" is kept for the tab only; the console's key is offered when there is one.
const ui = SwaggerUIBundle({
  url: "/schema/openapi.json",
  dom_id: "#swagger",
  deepLinking: true,
  validatorUrl: null,
  tryItOutEnabled: false,
  persistAuthorization: false,
  onComplete: () => {
    const key = sessionStorage.getItem("flowbox.key");
    if (key) ui.preauthorizeApiKey("apiKey", key);
  },
});
window.ui = ui;
