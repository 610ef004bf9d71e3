export class Hello {
  constructor(greeting) {
    this.greeting = greeting;
  }

  call(request) {
    const name = new URL(request.url).searchParams.get('name') ?? 'world';
    return `${this.greeting} ${name}`;
  }
}
